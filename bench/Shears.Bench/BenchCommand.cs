namespace Shears.Bench;

/// <summary>Dispatches the benchmarks; prints usage and returns 2 on a bad command line.</summary>
internal static class BenchCommand
{
    private const string Usage = """
        usage:
          selection [--elements N] [--shards 1,2,4] [--dtype f32|bf16] [--repeat R]
                    [--threads 1,2] [--torch-threads 2] [--sparsity 0.5] [--seed N]
          layer     [--rows 4096] [--cols 4096] [--repeat R] [--torch-threads 2] [--sparsity 0.5] [--seed N]
          checkpoint DIR [--hidden 2048] [--layers 10] [--intermediate 5504] [--vocab 32000]
                    [--heads hidden/128] [--kv-heads heads] [--head-dim hidden/heads] [--model-type llama|mistral|qwen2|qwen3]
                    [--tie] [--sliding-window W] [--dtype bf16|f16|f32] [--max-shard-bytes 2000000000]
                    (a bf16 LLaMA-layout checkpoint for the end-to-end benchmark, bench/e2e.sh)
          forward   --models LABEL=DIR[,LABEL=DIR…] --eval FILE [--seq-len 128] [--batch 8] [--threads 2] [--repeat 9]
                    (LLaMA checkpoints in one process: perplexity and TorchSharp forward tokens/s, alternating)
          write     FILE SIZE_MIB [--repeat 5]
                    (the machine's own buffered-write speed, no Shears code: the floor under cp and the export)
          synthetic-checkpoint DIR --shape llama-2-70b|llama-2-7b [--layers N] [--seed S] [--data]
                    (the model's safetensors headers with the data as holes, or with --data the generated weights; bench/scale.sh)
          synthetic-count REPORT --seed S [--threads N]
                    (an independent count of a --synthetic-weights run's selection from the generator alone)
        """;

    private static int Checkpoint(ReadOnlySpan<string> span)
    {
        string[] args = span.ToArray();
        if (args.Length == 0) { Console.Error.WriteLine(Usage); return 2; }
        string dir = args[0];
        int Get(string name, int fallback)
        {
            for (int i = 0; i + 1 < args.Length; i++) if (args[i] == name) return int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture);
            return fallback;
        }
        int hidden = Get("--hidden", 2048), layers = Get("--layers", 10), intermediate = Get("--intermediate", 5504), vocab = Get("--vocab", 32000);
        int? Optional(string name) => Array.IndexOf(args, name) >= 0 ? Get(name, 0) : null;
        string Text(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        int heads = Get("--heads", Math.Max(1, hidden / 128));
        var dtype = Text("--dtype", "bf16") switch
        {
            "bf16" => Shears.Pruning.Checkpoints.TensorDType.BF16,
            "f16" => Shears.Pruning.Checkpoints.TensorDType.F16,
            "f32" => Shears.Pruning.Checkpoints.TensorDType.F32,
            var other => throw new ArgumentException($"--dtype {other}: expected bf16, f16 or f32"),
        };
        Directory.CreateDirectory(dir);
        Shears.Pruning.Checkpoints.DemoCheckpoint.Write(dir, new Shears.Pruning.Checkpoints.DemoCheckpointOptions(
            HiddenSize: hidden, Layers: layers, Heads: heads, KvHeads: Get("--kv-heads", heads), IntermediateSize: intermediate, VocabSize: vocab,
            DType: dtype, MaxShardBytes: Get("--max-shard-bytes", 2_000_000_000), ModelType: Text("--model-type", "llama"), HeadDim: Optional("--head-dim"),
            TieWordEmbeddings: Array.IndexOf(args, "--tie") >= 0, SlidingWindow: Optional("--sliding-window")));
        long bytes = Directory.GetFiles(dir).Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"wrote {dir}: {bytes / 1e9:F2} GB");
        return 0;
    }

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        if (args[0] == "checkpoint") return Checkpoint(args.AsSpan(1));
        if (args[0] == "synthetic-checkpoint") return SyntheticBench.Checkpoint(args.AsSpan(1));
        if (args[0] == "synthetic-count") return SyntheticBench.Count(args.AsSpan(1));
        if (args[0] == "write") return WriteBench.Run(args.AsSpan(1));
        if (args[0] == "forward") return ForwardBench.Run(args.AsSpan(1));
        try
        {
            var options = BenchOptions.Parse(args.AsSpan(1));
            switch (args[0])
            {
                case "selection":
                    SelectionBench.Run(options);
                    return 0;
                case "layer":
                    LayerBench.Run(options);
                    return 0;
                default:
                    Console.Error.WriteLine($"unknown benchmark '{args[0]}'");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        catch (BenchUsageException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }
    }
}
