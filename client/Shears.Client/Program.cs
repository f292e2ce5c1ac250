using System.CommandLine;
using Shears.Client;

var root = new RootCommand("shears: prunes neural networks too large for one machine, on an Orleans cluster");
foreach (var command in Commands.All()) root.Add(command);
return await root.Parse(args).InvokeAsync();
