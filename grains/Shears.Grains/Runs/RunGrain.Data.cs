using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Grains.Shards;
using Shears.Pruning.Allocation;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Schedules;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Grains.Runs;

// The run's data files: evaluation, fine-tuning and calibration sequences, read and checked before the run starts.
public sealed partial class RunGrain
{
    /// <summary>
    /// A decoder's token-id sequences from <paramref name="path"/> (a .json file of id arrays, or text tokenized by the
    /// checkpoint's own tokenizer), every id checked against the model's vocabulary.
    /// </summary>
    private static IReadOnlyList<long[]> DecoderTokenIds(string path, RunSpec spec, Func<Shears.Pruning.Models.CheckpointTokenizer> tokenizer, int vocab)
    {
        var sequences = Shears.Pruning.Models.EvalData.LoadTokenIds(path, spec.EvalSeqLen, tokenizer);
        for (int s = 0; s < sequences.Count; s++)
        {
            int bad = Array.FindIndex(sequences[s], id => id >= vocab);
            if (bad >= 0)
                throw new InvalidDataException($"'{path}', sequence {s}, position {bad}: token id {sequences[s][bad]} is outside the model's vocabulary of {vocab} (config.json vocab_size)");
        }
        return sequences;
    }

    // The sequences StartAsync read for this activation's run (not state: a restarted grain reads them again).
    private (IReadOnlyList<long[]>? Eval, IReadOnlyList<long[]>? Train, IReadOnlyList<long[]>? Calibration)? _tokenIds;

    /// <summary>The evaluation, fine-tuning and calibration sequences (token ids, or sentences for an encoder), checked before the run starts.</summary>
    private static (IReadOnlyList<long[]>? Eval, IReadOnlyList<long[]>? Train, IReadOnlyList<long[]>? Calibration) LoadTokenIds(RunSpec spec, CheckpointManifest manifest)
    {
        // One tokenizer and one config read for all three files, and only when a decoder needs them.
        var tokenizer = new Lazy<Shears.Pruning.Models.CheckpointTokenizer>(() => Shears.Pruning.Models.CheckpointTokenizer.Load(manifest.Root));
        var vocab = new Lazy<int>(() => Shears.Pruning.Models.LlamaConfig.Load(manifest.Root).VocabSize);
        IReadOnlyList<long[]>? Read(string? path, string option)
        {
            if (path is null) return null;
            if (!File.Exists(path)) throw new RunRejectedException($"{option} '{path}' does not exist");
            try
            {
                return manifest.Format == CheckpointFormat.Onnx
                    ? EncoderSentences(path, option, manifest)
                    : DecoderTokenIds(path, spec, () => tokenizer.Value, vocab.Value);
            }
            catch (Exception e) when (e is ArgumentException or FormatException or NotSupportedException or System.Text.Json.JsonException or IOException
                                          or InvalidDataException or Shears.Pruning.Models.LlamaConfigException)
            {
                throw new RunRejectedException($"{option}: {e.Message}");
            }
        }
        return (Read(spec.EvalData, "--eval"), Read(spec.FinetuneData, "--finetune-data"), Read(spec.Calibration, "--calibration"));
    }

    /// <summary>
    /// Sentences for an encoder: one per line of a text file (a .tsv file: its last column), tokenized
    /// with the model's own WordPiece vocabulary (vocab.txt beside the model).
    /// </summary>
    private static IReadOnlyList<long[]> EncoderSentences(string path, string option, CheckpointManifest manifest, int column = -1)
    {
        string vocabulary = Path.Combine(manifest.Root, "vocab.txt");
        if (!File.Exists(vocabulary))
            throw new RunRejectedException($"{option}: the encoder's vocabulary {vocabulary} is missing (it tokenizes the sentences)");
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(vocabulary, maxLength: 128);
        var sentences = File.ReadLines(path)
            .Select(line => path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? line.Split('\t')[^(-column)] : line)
            .Select(line => line.Trim()).Where(line => line.Length > 0)
            .Select(line => tokenizer.Tokenize(line).Select(id => (long)id).ToArray()).ToArray();
        if (sentences.Length < 2) throw new RunRejectedException($"{option} '{path}' holds fewer than 2 sentences");
        return sentences;
    }

    /// <summary>
    /// Paraphrase retrieval queries: a .tsv evaluation file whose rows hold two translations of the same
    /// text (… \t query \t match) gives its next-to-last column; null otherwise.
    /// </summary>
    private static IReadOnlyList<long[]>? EncoderQueries(RunSpec spec, CheckpointManifest manifest)
    {
        if (spec.EvalData is not { } path || !path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase)) return null;
        if (File.ReadLines(path).Where(l => l.Trim().Length > 0).Any(l => l.Split('\t').Length < 2)) return null;
        return EncoderSentences(path, "--eval", manifest, column: -2);
    }

    private static ScheduleKind ParseSchedule(string name) => name switch
    {
        RunOptions.Schedules.Linear => ScheduleKind.Linear,
        RunOptions.Schedules.Cubic => ScheduleKind.Cubic,
        _ => ScheduleKind.OneShot,
    };
}
