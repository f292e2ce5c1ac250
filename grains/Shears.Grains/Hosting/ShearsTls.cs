using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Orleans.Connections.Security;

namespace Orleans.Hosting;

/// <summary>
/// The files of a silo's or a client's TLS identity: its certificate (PEM, with the private key in <see cref="Key"/> or
/// in the same file; or PKCS#12 <c>.pfx</c>/<c>.p12</c> with an optional password) and the certificate authorities it
/// trusts (PEM, one or more certificates).
/// </summary>
public sealed record ShearsTlsFiles(string Certificate, string? Key, string Authority, string? Password = null);

/// <summary>
/// Mutual TLS for every connection of a Shears cluster: silo to silo and client to gateway. Each side presents its
/// certificate and accepts the other's only when it chains to one of the configured authorities (the cluster's CA),
/// is within its validity period and may be used for the direction of the connection. Host names are not compared:
/// silos are reached by the addresses they advertise, and membership of the cluster is what the CA's signature says.
/// </summary>
public static class ShearsTls
{
    private const string ServerAuthentication = "1.3.6.1.5.5.7.3.1", ClientAuthentication = "1.3.6.1.5.5.7.3.2";

    /// <summary>
    /// The certificate with its private key and the trusted authorities, each failure naming the file at fault. A silo's
    /// certificate must allow server and client authentication (silos accept connections and open them), a client's
    /// client authentication.
    /// </summary>
    public static (X509Certificate2 Certificate, X509Certificate2Collection Authorities) Load(ShearsTlsFiles files, bool silo)
    {
        ArgumentNullException.ThrowIfNull(files);
        var certificate = LoadCertificate(files);
        if (!certificate.HasPrivateKey)
            throw new ArgumentException($"--tls-cert {files.Certificate}: the certificate has no private key (give it in the same PEM file, with --tls-key, or as a .pfx)");
        foreach (string usage in silo ? new[] { ServerAuthentication, ClientAuthentication } : [ClientAuthentication])
            if (!AllowsUsage(certificate, usage))
                throw new ArgumentException($"--tls-cert {files.Certificate}: its extended key usage lacks {(usage == ServerAuthentication ? "server" : "client")} authentication, which a {(silo ? "silo" : "client")} needs");
        return (certificate, LoadAuthorities(files.Authority));
    }

    /// <summary>The certificate authorities of a PEM file (--tls-ca), a failure naming the file.</summary>
    public static X509Certificate2Collection LoadAuthorities(string path)
    {
        var authorities = new X509Certificate2Collection();
        try { authorities.ImportFromPemFile(Exists(path, "--tls-ca")); }
        catch (CryptographicException e) { throw new ArgumentException($"--tls-ca {path}: not a PEM certificate file ({e.Message})", e); }
        if (authorities.Count == 0) throw new ArgumentException($"--tls-ca {path}: holds no certificate");
        return authorities;
    }

    private static X509Certificate2 LoadCertificate(ShearsTlsFiles files)
    {
        string path = Exists(files.Certificate, "--tls-cert");
        bool pkcs12 = path.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".p12", StringComparison.OrdinalIgnoreCase);
        if (pkcs12 && files.Key is not null) throw new ArgumentException($"--tls-key {files.Key}: a PKCS#12 certificate ({path}) carries its own key");
        string? key = files.Key is null ? null : Exists(files.Key, "--tls-key");
        try
        {
            return pkcs12 ? X509CertificateLoader.LoadPkcs12FromFile(path, files.Password) : X509Certificate2.CreateFromPemFile(path, key);
        }
        // A file that is not PEM, a key of another certificate (ArgumentException from the PEM reader), a wrong password.
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            string which = key is null ? $"--tls-cert {path}" : $"--tls-cert {path} with --tls-key {key}";
            throw new ArgumentException($"{which}: cannot read a certificate and its private key ({e.Message})", e);
        }
    }

    private static string Exists(string path, string option) =>
        File.Exists(path) ? path : throw new ArgumentException($"{option} {path}: no such file");

    private static bool AllowsUsage(X509Certificate2 certificate, string usage)
    {
        var extension = certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
        return extension is null || extension.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == usage);
    }

    /// <summary>
    /// Whether a remote certificate is a member of the cluster: it chains to one of <paramref name="authorities"/> (and
    /// to nothing else: the machine's own root store is not consulted), every certificate of the chain is valid now,
    /// and it allows server authentication where <paramref name="remoteIsServer"/> (this side connected), else client
    /// authentication (this side accepted).
    /// </summary>
    public static bool Trusted(X509Certificate2 remote, X509Certificate2Collection authorities, bool remoteIsServer)
    {
        ArgumentNullException.ThrowIfNull(remote);
        if (!AllowsUsage(remote, remoteIsServer ? ServerAuthentication : ClientAuthentication)) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        return chain.Build(remote);
    }

    private static void Configure(TlsOptions options, X509Certificate2 certificate, X509Certificate2Collection authorities, bool silo)
    {
        options.LocalCertificate = certificate;
        options.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
        options.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
        // The platform's verdict (sslPolicyErrors) is set aside: it judges against the machine's roots and a host name;
        // the cluster's authorities decide. A silo validates both directions, a client only gateways (servers).
        options.RemoteCertificateValidation = silo
            ? (remote, _, _) => Trusted(remote, authorities, remoteIsServer: false) || Trusted(remote, authorities, remoteIsServer: true)
            : (remote, _, _) => Trusted(remote, authorities, remoteIsServer: true);
    }

    public static ISiloBuilder UseShearsTls(this ISiloBuilder builder, ShearsTlsFiles files)
    {
        var (certificate, authorities) = Load(files, silo: true);
        return builder.UseTls(certificate, o => Configure(o, certificate, authorities, silo: true));
    }

    public static IClientBuilder UseShearsTls(this IClientBuilder builder, ShearsTlsFiles files)
    {
        var (certificate, authorities) = Load(files, silo: false);
        return builder.UseTls(certificate, o => Configure(o, certificate, authorities, silo: false));
    }
}
