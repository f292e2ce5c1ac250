using System.Globalization;
using Shears.Pruning.Checkpoints;

namespace Shears.Bench;

internal sealed class BenchUsageException(string message) : Exception(message);

/// <summary>The options of both benchmarks; each reads the ones it needs.</summary>
internal sealed record BenchOptions
{
    public long Elements { get; init; } = 64L << 20;
    public int[] Shards { get; init; } = [1, 2, 4];
    public TensorDType DType { get; init; } = TensorDType.F32;
    public int Repeat { get; init; } = 3;
    public int[] Threads { get; init; } = [1, 2];
    public int[] TorchThreads { get; init; } = [2];
    public double Sparsity { get; init; } = 0.5;
    public ulong Seed { get; init; } = 20240601;
    public int Rows { get; init; } = 4096;
    public int Cols { get; init; } = 4096;

    public static BenchOptions Parse(ReadOnlySpan<string> args)
    {
        var options = new BenchOptions();
        for (int i = 0; i < args.Length; i += 2)
        {
            string name = args[i];
            if (i + 1 >= args.Length) throw new BenchUsageException($"option {name} needs a value");
            string value = args[i + 1];
            options = name switch
            {
                "--elements" => options with { Elements = Positive(name, value) },
                "--shards" => options with { Shards = List(name, value) },
                "--dtype" => options with
                {
                    DType = value switch
                    {
                        "f32" => TensorDType.F32,
                        "bf16" => TensorDType.BF16,
                        _ => throw new BenchUsageException($"--dtype takes f32 or bf16, got '{value}'"),
                    },
                },
                "--repeat" => options with { Repeat = (int)Positive(name, value) },
                "--threads" => options with { Threads = List(name, value) },
                "--torch-threads" => options with { TorchThreads = List(name, value) },
                "--sparsity" => options with { Sparsity = Fraction(name, value) },
                "--seed" => options with { Seed = ulong.TryParse(value, CultureInfo.InvariantCulture, out ulong s) ? s : throw new BenchUsageException($"--seed takes an unsigned integer, got '{value}'") },
                "--rows" => options with { Rows = (int)Positive(name, value) },
                "--cols" => options with { Cols = (int)Positive(name, value) },
                _ => throw new BenchUsageException($"unknown option '{name}'"),
            };
        }
        return options;
    }

    private static long Positive(string name, string value) =>
        long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long n) && n > 0
            ? n
            : throw new BenchUsageException($"{name} takes a positive integer, got '{value}'");

    private static int[] List(string name, string value)
    {
        var items = value.Split(',', StringSplitOptions.TrimEntries);
        var result = new int[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            if (!int.TryParse(items[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out result[i]) || result[i] <= 0)
                throw new BenchUsageException($"{name} takes a comma list of positive integers, got '{value}'");
        }
        return result;
    }

    private static double Fraction(string name, string value) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s is >= 0 and <= 1
            ? s
            : throw new BenchUsageException($"{name} takes a number between 0 and 1, got '{value}'");
}
