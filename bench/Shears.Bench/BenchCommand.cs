namespace Shears.Bench;

/// <summary>Dispatches `selection` and `layer`; prints usage and returns 2 on a bad command line.</summary>
internal static class BenchCommand
{
    private const string Usage = """
        usage:
          selection [--elements N] [--shards 1,2,4] [--dtype f32|bf16] [--repeat R]
                    [--threads 1,2] [--torch-threads 2] [--sparsity 0.5] [--seed N]
          layer     [--rows 4096] [--cols 4096] [--repeat R] [--torch-threads 2] [--sparsity 0.5] [--seed N]
        """;

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
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
