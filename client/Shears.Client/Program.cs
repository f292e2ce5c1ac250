using System.CommandLine;
using System.Globalization;
using Shears.Client;

// Output, parsing and file names never depend on the machine's locale.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.DefaultThreadCurrentUICulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = CultureInfo.InvariantCulture;

Shears.Client.ClientTimes.Mark("main");
JitProfile.Start(args);
var root = new RootCommand("shears: prunes neural networks too large for one machine, on an Orleans cluster");
foreach (var command in Commands.All()) root.Add(command);
int exit = await root.Parse(args).InvokeAsync();
Shears.Client.ClientTimes.Mark("exit");
return exit;
