using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Runtime.Hosting;
using Shears.Grains;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Shears.Grains.Compute;
using Shears.Grains.Placement;
using Shears.Grains.Shards;

namespace Orleans.Hosting;

/// <summary>Registers Shears' grains and per-silo services. The silo host and the client's embedded silo both call this.</summary>
public static class ShearsHostingExtensions
{
    /// <summary>The largest message Shears sends: tensors and activations travel in pieces of at most this.</summary>
    public const int MaxMessageBytes = 16 * 1024 * 1024;

    public static ISiloBuilder AddShears(this ISiloBuilder builder, Action<ShearsOptions>? configure = null)
    {
        builder.Services.AddShears(builder.Configuration, configure);
        // The role travels as silo metadata so placement on any silo knows which silos hold weights.
        var probe = new ShearsOptions();
        builder.Configuration.GetSection(ShearsOptions.SectionName).Bind(probe);
        configure?.Invoke(probe);
        builder.UseSiloMetadata(new Dictionary<string, string>
        {
            [SiloRoles.MetadataKey] = probe.Role,
            // The budget too, so that a coordinator on any silo places shards within every silo's.
            [ShardBudgets.MetadataKey] = (probe.MemoryBudget > 0 ? probe.MemoryBudget : ShardBudgets.DefaultBudget()).ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
        builder.AddPlacementDirector<ShardPlacement, ShardPlacementDirector>();
        builder.Services.AddSingleton<IIncomingGrainCallFilter>(services => services.GetRequiredService<Shears.Grains.Diagnostics.GrainCallTimes>());
        builder.AddPlacementDirector<CoordinatorPlacement, CoordinatorPlacementDirector>();
        // Orleans drops a connection on a message over its body limit; Shears never needs more than
        // 16 MB in one message, so a bug that would send more fails loudly here first.
        builder.Configure<Orleans.Configuration.SiloMessagingOptions>(o => o.MaxMessageBodySize = MaxMessageBytes);
        // A shard's error (a NaN weight, a malformed or changed checkpoint file: Shears.Pruning's exceptions, which know
        // nothing of Orleans) reaches the coordinator on another silo with its type and message; without this Orleans
        // sends "Could not find a codec" in their place.
        builder.Services.Configure<Orleans.Serialization.ExceptionSerializationOptions>(o => o.SupportedNamespacePrefixes.Add("Shears"));
        return builder;
    }

    /// <summary>
    /// Keeps the runs' state in files under <paramref name="directory"/> (<see cref="FileGrainStorage"/>),
    /// for silos clustered without Redis: every silo of the cluster must reach the same folder.
    /// </summary>
    public static ISiloBuilder AddShearsFileStorage(this ISiloBuilder builder, string directory)
    {
        builder.Services.AddGrainStorage(ShearsStorage.Name, (services, _) =>
            new FileGrainStorage(directory, services.GetRequiredService<Orleans.Serialization.Serializer>()));
        return builder;
    }

    /// <summary>
    /// Keeps Orleans' reminders (those that keep unfinished runs going, <see cref="ShearsOptions.ResumeCheckPeriod"/>) in
    /// files under <paramref name="directory"/> (<see cref="FileReminderTable"/>), for silos clustered without Redis: every
    /// silo of the cluster must reach the same folder, as for <see cref="AddShearsFileStorage"/>.
    /// </summary>
    public static ISiloBuilder AddShearsFileReminders(this ISiloBuilder builder, string directory)
    {
        builder.Services.AddShearsFileReminders(directory);
        return builder;
    }

    public static IServiceCollection AddShearsFileReminders(this IServiceCollection services, string directory)
    {
        services.AddReminders();
        services.AddSingleton<IReminderTable>(provider => new FileReminderTable(directory, provider.GetRequiredService<Orleans.Serialization.Serializer>()));
        return services;
    }

    public static IServiceCollection AddShears(this IServiceCollection services, IConfiguration? configuration = null, Action<ShearsOptions>? configure = null)
    {
        var options = services.AddOptions<ShearsOptions>();
        if (configuration is not null) options.Bind(configuration.GetSection(ShearsOptions.SectionName));
        if (configure is not null) options.Configure(configure);
        options.Validate(o => o.Role is "all" or "worker" or "coordinator", "Shears:Role must be all, worker or coordinator")
               .Validate(o => o.ComputeThreads >= 0, "Shears:ComputeThreads must not be negative")
               .Validate(o => o.MaxRecoveries >= 0, "Shears:MaxRecoveries must not be negative")
               .Validate(o => o.MemoryBudget >= 0, "Shears:MemoryBudget must not be negative")
               .Validate(o => o.ResumeCheckPeriod > TimeSpan.Zero, "Shears:ResumeCheckPeriod must be positive")
               .ValidateOnStart();
        // The runs' reminder is the only one Shears registers: a period configured below Orleans' floor (one minute)
        // lowers the floor rather than failing every run as it starts. Orleans still warns of it as the silo starts.
        services.AddOptions<ReminderOptions>().PostConfigure<IOptions<ShearsOptions>>((reminders, shears) =>
        {
            var period = shears.Value.ResumeCheckPeriod;
            if (period > TimeSpan.Zero && period < reminders.MinimumReminderPeriod) reminders.MinimumReminderPeriod = period;
        });
        services.AddSingleton<ComputeExecutor>();
        services.AddSingleton<ComputeDevice>();
        services.AddSingleton<ManifestCache>();
        services.AddSingleton<SiloRoles>();
        services.AddSingleton<ShardBudgets>();
        services.AddSingleton<Shears.Grains.Diagnostics.GrainCallTimes>();
        return services;
    }
}
