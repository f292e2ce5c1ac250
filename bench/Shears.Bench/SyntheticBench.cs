using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Scoring;

namespace Shears.Bench;

/// <summary>
/// LLaMA-shaped checkpoints for runs with <c>--synthetic-weights</c> (bench/scale.sh): safetensors headers of the model's
/// tensors in files of at most 5 GB, with the data either left as holes (a sparse file: the shapes without the terabytes)
/// or filled with exactly the weights the shards generate; and an independent count of a finished run's selection.
/// </summary>
public static class SyntheticBench
{
    private const long MaxFileBytes = 5_000_000_000;

    public sealed record Shape(int Hidden, int Intermediate, int Layers, int Heads, int KvHeads, int Vocab)
    {
        public static Shape Named(string name) => name switch
        {
            "llama-2-70b" => new(8192, 28672, 80, 64, 8, 32000),
            "llama-2-7b" => new(4096, 11008, 32, 32, 32, 32000),
            _ => throw new ArgumentException($"--shape '{name}' is not one of llama-2-70b, llama-2-7b"),
        };

        public IEnumerable<(string Name, long[] Dims)> Tensors()
        {
            int kv = KvHeads * (Hidden / Heads);
            yield return ("model.embed_tokens.weight", [Vocab, Hidden]);
            for (int i = 0; i < Layers; i++)
            {
                string p = $"model.layers.{i}.";
                yield return (p + "self_attn.q_proj.weight", [Hidden, Hidden]);
                yield return (p + "self_attn.k_proj.weight", [kv, Hidden]);
                yield return (p + "self_attn.v_proj.weight", [kv, Hidden]);
                yield return (p + "self_attn.o_proj.weight", [Hidden, Hidden]);
                yield return (p + "mlp.gate_proj.weight", [Intermediate, Hidden]);
                yield return (p + "mlp.up_proj.weight", [Intermediate, Hidden]);
                yield return (p + "mlp.down_proj.weight", [Hidden, Intermediate]);
                yield return (p + "input_layernorm.weight", [Hidden]);
                yield return (p + "post_attention_layernorm.weight", [Hidden]);
            }
            yield return ("model.norm.weight", [Hidden]);
            yield return ("lm_head.weight", [Vocab, Hidden]);
        }
    }

    /// <summary>synthetic-checkpoint DIR --shape NAME [--layers N] [--seed S] [--data]</summary>
    public static int Checkpoint(ReadOnlySpan<string> span)
    {
        string[] args = span.ToArray();
        if (args.Length == 0) { Console.Error.WriteLine("usage: synthetic-checkpoint DIR --shape llama-2-70b|llama-2-7b [--layers N] [--seed S] [--data]"); return 2; }
        string dir = args[0];
        string? Get(string name) { for (int i = 1; i + 1 < args.Length; i++) if (args[i] == name) return args[i + 1]; return null; }
        var shape = Shape.Named(Get("--shape") ?? "llama-2-70b");
        if (Get("--layers") is { } layers) shape = shape with { Layers = int.Parse(layers, CultureInfo.InvariantCulture) };
        long seed = long.Parse(Get("--seed") ?? "1", CultureInfo.InvariantCulture);
        bool data = args.Contains("--data");
        Directory.CreateDirectory(dir);

        var files = new List<List<(string Name, long[] Dims)>> { new() };
        long inFile = 0;
        foreach (var t in shape.Tensors())
        {
            long bytes = t.Dims.Aggregate(2L, (a, d) => a * d);
            if (inFile > 0 && inFile + bytes > MaxFileBytes) { files.Add(new()); inFile = 0; }
            files[^1].Add(t);
            inFile += bytes;
        }
        var weightMap = new JsonObject();
        long total = 0;
        var chunk = new byte[8 << 20];
        for (int f = 0; f < files.Count; f++)
        {
            string fileName = $"model-{f + 1:D5}-of-{files.Count:D5}.safetensors";
            var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
            long offset = 0;
            foreach (var (name, dims) in files[f])
            {
                long bytes = dims.Aggregate(2L, (a, d) => a * d);
                header[name] = new JsonObject { ["dtype"] = "BF16", ["shape"] = new JsonArray(dims.Select(d => (JsonNode)d).ToArray()), ["data_offsets"] = new JsonArray(offset, offset + bytes) };
                offset += bytes;
                weightMap[name] = fileName;
            }
            var json = Encoding.UTF8.GetBytes(header.ToJsonString());
            int padded = (json.Length + 7) / 8 * 8;
            var prefix = new byte[8 + padded];
            BinaryPrimitives.WriteInt64LittleEndian(prefix, padded);
            json.CopyTo(prefix, 8);
            prefix.AsSpan(8 + json.Length).Fill((byte)' ');
            using var handle = File.OpenHandle(Path.Combine(dir, fileName), FileMode.Create, FileAccess.ReadWrite);
            RandomAccess.Write(handle, prefix, 0);
            RandomAccess.SetLength(handle, prefix.Length + offset);
            if (data)
            {
                long at = prefix.Length;
                foreach (var (name, dims) in files[f])
                {
                    long bytes = dims.Aggregate(2L, (a, d) => a * d);
                    for (long done = 0; done < bytes; done += chunk.Length)
                    {
                        int n = (int)Math.Min(chunk.Length, bytes - done);
                        SyntheticWeights.Bytes(seed, name, done / 2, chunk.AsSpan(0, n));
                        RandomAccess.Write(handle, chunk.AsSpan(0, n), at + done);
                    }
                    at += bytes;
                }
            }
            total += offset;
        }
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
            new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = weightMap }.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "config.json"), new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["hidden_size"] = shape.Hidden,
            ["intermediate_size"] = shape.Intermediate, ["num_hidden_layers"] = shape.Layers, ["num_attention_heads"] = shape.Heads,
            ["num_key_value_heads"] = shape.KvHeads, ["vocab_size"] = shape.Vocab, ["max_position_embeddings"] = 4096,
            ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["hidden_act"] = "silu", ["torch_dtype"] = "bfloat16",
            ["tie_word_embeddings"] = false, ["bos_token_id"] = 1, ["eos_token_id"] = 2,
        }.ToJsonString());
        Console.WriteLine($"wrote {dir}: {files.Count} files, {total / 1e9:F2} GB of bf16 {(data ? "written" : "as holes (sparse)")}, seed {seed}");
        return 0;
    }

    /// <summary>
    /// synthetic-count REPORT --seed S [--threads N]: counts, from the generator alone, every bf16 magnitude of the report's
    /// pruned tensors (2^15 buckets: a different algorithm from the shards' radix selection), and checks the run's masked
    /// total against round_half_to_even(s × N), its threshold against the k-th smallest magnitude, and each tensor's masked
    /// count against its elements below and at that threshold. Exit 0 when all hold.
    /// </summary>
    public static int Count(ReadOnlySpan<string> span)
    {
        string[] args = span.ToArray();
        if (args.Length == 0) { Console.Error.WriteLine("usage: synthetic-count REPORT --seed S [--threads N]"); return 2; }
        string? Get(string name) { for (int i = 1; i + 1 < args.Length; i++) if (args[i] == name) return args[i + 1]; return null; }
        long seed = long.Parse(Get("--seed") ?? "1", CultureInfo.InvariantCulture);
        int threads = int.Parse(Get("--threads") ?? Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        var report = JsonNode.Parse(File.ReadAllText(args[0]))!;
        var tensors = report["tensors"]!.AsArray().Select(t => (Name: (string)t!["name"]!, Elements: (long)t["elements"]!, Masked: (long)t["maskedWeights"]!)).ToArray();
        double sparsity = (double)report["rounds"]!.AsArray()[^1]!["targetSparsity"]!;
        double? threshold = (double?)report["rounds"]!.AsArray()[^1]!["threshold"];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var perTensor = new long[tensors.Length][];
        const long Block = 1 << 22;
        var work = tensors.SelectMany((t, i) => Enumerable.Range(0, (int)((t.Elements + Block - 1) / Block)).Select(b => (Tensor: i, Start: b * Block))).ToArray();
        var partial = new System.Collections.Concurrent.ConcurrentBag<(int Tensor, long[] Counts)>();
        Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, work.Length, 16), new ParallelOptions { MaxDegreeOfParallelism = threads }, range =>
        {
            var values = new ushort[Block];
            var counts = new Dictionary<int, long[]>();
            for (int w = range.Item1; w < range.Item2; w++)
            {
                var (ti, start) = work[w];
                int n = (int)Math.Min(Block, tensors[ti].Elements - start);
                SyntheticWeights.Bf16(seed, tensors[ti].Name, start, values.AsSpan(0, n));
                if (!counts.TryGetValue(ti, out var c)) counts[ti] = c = new long[1 << 15];
                foreach (ushort v in values.AsSpan(0, n)) c[v & 0x7FFF]++;
            }
            foreach (var (ti, c) in counts) partial.Add((ti, c));
        });
        for (int i = 0; i < tensors.Length; i++) perTensor[i] = new long[1 << 15];
        foreach (var (ti, c) in partial) for (int v = 0; v < c.Length; v++) perTensor[ti][v] += c[v];
        var all = new long[1 << 15];
        foreach (var c in perTensor) for (int v = 0; v < c.Length; v++) all[v] += c[v];
        long n = tensors.Sum(t => t.Elements);
        long k = (long)Math.Round(sparsity * n, MidpointRounding.ToEven);
        int kth = 0;
        for (long below = 0; kth < all.Length; kth++) { if (below + all[kth] >= k) break; below += all[kth]; }
        float kthValue = BitConverter.UInt32BitsToSingle((uint)kth << 16);
        long masked = tensors.Sum(t => t.Masked);
        bool ok = true;
        void Check(bool holds, string what) { Console.WriteLine($"{(holds ? "ok  " : "FAIL")} {what}"); ok &= holds; }
        Check(masked == k, $"masked {masked} = round_half_to_even({sparsity} × {n}) = {k}");
        Check(k == 0 || threshold is { } t0 && (float)t0 == kthValue, $"threshold {threshold} = the {k}-th smallest magnitude {kthValue}");
        int bad = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            long less = perTensor[i].Take(kth).Sum(), equal = perTensor[i][Math.Min(kth, all.Length - 1)];
            if (tensors[i].Masked < less || tensors[i].Masked > less + equal) bad++;
        }
        Check(bad == 0, $"every tensor's masked count lies in [below, below + at] the threshold ({tensors.Length} tensors, {bad} outside)");
        Console.WriteLine($"counted {n} generated weights in {clock.Elapsed.TotalSeconds:F1} s on {threads} threads");
        return ok ? 0 : 1;
    }
}
