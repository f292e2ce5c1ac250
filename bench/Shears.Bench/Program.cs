using Shears.Bench;

return BenchCommand.Run(args);
