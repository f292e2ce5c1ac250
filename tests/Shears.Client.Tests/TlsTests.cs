using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Orleans.Hosting;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>Mutual TLS: silos and clients with certificates made by the test, and those without one the CA signed.</summary>
public class TlsTests
{
    [Fact]
    public void OnlyCertificatesTheClusterAuthoritySignedAreTrusted()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir.Path);
        var (ca, caPath) = pki.Authority("cluster-ca");
        var (other, _) = pki.Authority("other-ca");
        var authorities = new X509Certificate2Collection(X509CertificateLoader.LoadCertificateFromFile(caPath));
        X509Certificate2 Read((string Certificate, string Key) files) => X509CertificateLoader.LoadCertificateFromFile(files.Certificate);

        using var member = Read(pki.Issue("member", ca));
        Assert.True(ShearsTls.Trusted(member, authorities, remoteIsServer: true));
        Assert.True(ShearsTls.Trusted(member, authorities, remoteIsServer: false));
        using var selfSigned = Read(pki.Issue("self", null));
        Assert.False(ShearsTls.Trusted(selfSigned, authorities, remoteIsServer: true));
        using var stranger = Read(pki.Issue("stranger", other));
        Assert.False(ShearsTls.Trusted(stranger, authorities, remoteIsServer: false));
        using var expired = Read(pki.Issue("expired", ca, notAfter: DateTimeOffset.UtcNow.AddHours(-1)));
        Assert.False(ShearsTls.Trusted(expired, authorities, remoteIsServer: false));
        // A client's certificate (client authentication only) may connect to a gateway but cannot serve as a silo.
        using var client = Read(pki.Issue("client", ca, [TestPki.ClientOnly]));
        Assert.True(ShearsTls.Trusted(client, authorities, remoteIsServer: false));
        Assert.False(ShearsTls.Trusted(client, authorities, remoteIsServer: true));
    }

    [Fact]
    public void TheTlsFilesAreCheckedNamingTheFileAtFault()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir.Path);
        var (ca, caPath) = pki.Authority("cluster-ca");
        var member = pki.Issue("member", ca);
        var another = pki.Issue("another", ca);
        var clientOnly = pki.Issue("client", ca, [TestPki.ClientOnly]);

        var (certificate, authorities) = ShearsTls.Load(new ShearsTlsFiles(member.Certificate, member.Key, caPath), silo: true);
        Assert.True(certificate.HasPrivateKey);
        Assert.Single(authorities);

        string missing = Path.Combine(dir.Path, "missing.crt");
        var e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(missing, member.Key, caPath), silo: true));
        Assert.Contains($"--tls-cert {missing}: no such file", e.Message);
        e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(member.Certificate, member.Key, missing), silo: true));
        Assert.Contains($"--tls-ca {missing}: no such file", e.Message);
        // The key of another certificate.
        e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(member.Certificate, another.Key, caPath), silo: true));
        Assert.Contains(member.Certificate, e.Message);
        Assert.Contains(another.Key, e.Message);
        // No key at all.
        e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(member.Certificate, null, caPath), silo: false));
        Assert.Contains(member.Certificate, e.Message);
        // A client's certificate cannot serve a silo; it serves a client.
        e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(clientOnly.Certificate, clientOnly.Key, caPath), silo: true));
        Assert.Contains("server authentication", e.Message);
        ShearsTls.Load(new ShearsTlsFiles(clientOnly.Certificate, clientOnly.Key, caPath), silo: false);
        // A key file given as the authority.
        e = Assert.Throws<ArgumentException>(() => ShearsTls.Load(new ShearsTlsFiles(member.Certificate, member.Key, member.Key), silo: true));
        Assert.Contains($"--tls-ca {member.Key}", e.Message);
    }

    [Fact]
    public async Task TlsOptionsOutOfPlaceAreRefusedBeforeAnythingStarts()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir.Path);
        var (ca, caPath) = pki.Authority("cluster-ca");
        var member = pki.Issue("member", ca);
        var embedded = await ShearsProcess.RunAsync("list", "--tls-cert", member.Certificate, "--tls-ca", caPath);
        Assert.Equal(2, embedded.ExitCode);
        var run = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5", "--tls-cert", member.Certificate, "--tls-ca", caPath);
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--tls-cert needs --cluster", run.Stderr);
        Assert.False(Directory.Exists(dir.Sub("out")) && Directory.EnumerateFileSystemEntries(dir.Sub("out")).Any());
        var noCa = await ShearsProcess.RunAsync("list", "--cluster", "127.0.0.1:1", "--tls-cert", member.Certificate, "--tls-key", member.Key);
        Assert.Equal(2, noCa.ExitCode);
        Assert.Contains("--tls-cert needs --tls-ca", noCa.Stderr);

        var silo = SiloProcess.Launch("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), "--tls-cert", member.Certificate);
        await using (silo)
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await silo.WaitForExitAsync(wait.Token);
            Assert.Equal(2, silo.ExitCode);
            Assert.Contains("--tls-cert needs --tls-ca", silo.Log);
        }
        string missing = Path.Combine(dir.Path, "nowhere.key");
        silo = SiloProcess.Launch("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
            "--tls-cert", member.Certificate, "--tls-key", missing, "--tls-ca", caPath);
        await using (silo)
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await silo.WaitForExitAsync(wait.Token);
            Assert.Equal(2, silo.ExitCode);
            Assert.Contains($"--tls-key {missing}: no such file", silo.Log);
        }
    }

    [Fact]
    public async Task AClusterWithMutualTlsServesOnlyClientsAndSilosItsAuthoritySigned()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir.Path);
        var (ca, caPath) = pki.Authority("cluster-ca");
        var (otherCa, _) = pki.Authority("other-ca");
        var siloA = pki.Issue("silo-a", ca);
        var siloB = pki.Issue("silo-b", ca);
        var client = pki.Issue("client", ca, [TestPki.ClientOnly]);
        var selfSigned = pki.Issue("self-signed", null);
        var stranger = pki.Issue("stranger", otherCa);
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 64, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 128, VocabSize: 96));
        string[] Run(string output) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.5", "--shard-elements", "4000"];
        var alone = await ShearsProcess.RunAsync(Run("embedded"));
        Assert.True(alone.ExitCode == 0, alone.ToString());

        string[] Tls((string Certificate, string Key) files) => ["--tls-cert", files.Certificate, "--tls-key", files.Key, "--tls-ca", caPath];
        string primary = SiloProcess.FreePort().ToString();
        int gatewayA = SiloProcess.FreePort(), gatewayB = SiloProcess.FreePort();
        var a = await SiloProcess.StartAsync(["--silo-port", primary, "--gateway-port", gatewayA.ToString(), "--state-dir", dir.Sub("state"), "--http-tls", .. Tls(siloA)]);
        await using (a)
        {
            var b = await SiloProcess.StartAsync(["--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", gatewayB.ToString(),
                "--primary", "127.0.0.1:" + primary, "--state-dir", dir.Sub("state"), .. Tls(siloB)]);
            await using (b)
            {
                string gateways = $"127.0.0.1:{gatewayA},127.0.0.1:{gatewayB}";
                var limit = TimeSpan.FromMinutes(3);

                // A trusted client runs a job whose shards sit on both silos: the output is the embedded one, byte for byte.
                var run = await ShearsProcess.RunAsync(limit, [.. Run("over-tls"), "--cluster", gateways, .. Tls(client)]);
                Assert.True(run.ExitCode == 0, run + "\n" + a.Log + "\n" + b.Log);
                foreach (string file in Directory.GetFiles(dir.Sub("embedded")).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json"))
                    Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("embedded"), file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("over-tls"), file))), $"{file} differs");
                var list = await ShearsProcess.RunAsync(limit, ["list", "--cluster", gateways, .. Tls(client)]);
                Assert.True(list.ExitCode == 0, list.ToString());
                Assert.Contains("Completed", list.Stdout, StringComparison.OrdinalIgnoreCase);

                // Without a certificate, self-signed, or signed by another authority: refused at the handshake.
                foreach (var (what, args) in new (string, string[])[]
                {
                    ("no certificate", []),
                    ("a self-signed certificate", ["--tls-cert", selfSigned.Certificate, "--tls-key", selfSigned.Key, "--tls-ca", caPath]),
                    ("another authority's certificate", ["--tls-cert", stranger.Certificate, "--tls-key", stranger.Key, "--tls-ca", caPath]),
                })
                {
                    var refused = await ShearsProcess.RunAsync(limit, ["list", "--cluster", gateways, .. args]);
                    Assert.True(refused.ExitCode != 0, $"a client with {what} listed the runs:\n{refused}");
                    Assert.DoesNotContain("Completed", refused.Stdout, StringComparison.OrdinalIgnoreCase);
                    Assert.Contains("no gateway accepted this client", refused.Stderr);
                    if (what != "no certificate") continue;
                    var started = await ShearsProcess.RunAsync(limit, [.. Run("refused"), "--cluster", gateways, .. args]);
                    Assert.True(started.ExitCode != 0, $"a client with {what} started a run:\n{started}");
                    Assert.False(Directory.Exists(dir.Sub("refused")) && Directory.EnumerateFileSystemEntries(dir.Sub("refused")).Any());
                }

                // A silo with another authority's certificate cannot join: the cluster's silos stay two.
                var intruder = SiloProcess.Launch(["--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
                    "--primary", "127.0.0.1:" + primary, "--state-dir", dir.Sub("state"), "--tls-cert", stranger.Certificate, "--tls-key", stranger.Key, "--tls-ca", caPath]);
                await using (intruder)
                {
                    await Task.Delay(TimeSpan.FromSeconds(15));
                    await using var connection = await ClusterConnection.OpenAsync(new ClusterTarget(gateways, client.Certificate, client.Key, caPath), CancellationToken.None);
                    var hosts = await connection.Client.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true);
                    Assert.Equal(2, hosts.Count);
                    Assert.DoesNotContain(hosts.Keys, h => h.Endpoint.Port.ToString() == intruder.SiloPort);
                }

                // The HTTP port of the silo started with --http-tls speaks HTTPS with its certificate, which chains to the CA.
                using var handler = new HttpClientHandler
                {
                    ServerCertificateCustomValidationCallback = (_, certificate, _, _) =>
                        certificate is not null && ShearsTls.Trusted(certificate, new X509Certificate2Collection(X509CertificateLoader.LoadCertificateFromFile(caPath)), remoteIsServer: true),
                };
                using var https = new HttpClient(handler);
                Assert.Equal("ok", await https.GetStringAsync($"https://127.0.0.1:{a.HttpPort}/healthz"));
                using var plain = new HttpClient();
                await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetStringAsync($"http://127.0.0.1:{a.HttpPort}/healthz"));
            }
        }
    }
}
