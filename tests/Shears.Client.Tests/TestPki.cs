using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Shears.Client.Tests;

/// <summary>Certificate authorities and certificates made for a test (ECDSA P-256), written as PEM files.</summary>
public sealed class TestPki(string folder)
{
    private const string ServerAuthentication = "1.3.6.1.5.5.7.3.1", ClientAuthentication = "1.3.6.1.5.5.7.3.2";
    private static int _serial;

    /// <summary>A CA certificate with its key, and its PEM certificate at NAME.crt (what --tls-ca takes).</summary>
    public (X509Certificate2 Certificate, string Path) Authority(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        string path = System.IO.Path.Combine(folder, name + ".crt");
        File.WriteAllText(path, certificate.ExportCertificatePem());
        return (certificate, path);
    }

    /// <summary>
    /// A certificate for NAME signed by <paramref name="issuer"/> (self-signed when null), for server and client
    /// authentication unless <paramref name="usages"/> says otherwise, written as NAME.crt and NAME.key.
    /// </summary>
    public (string Certificate, string Key) Issue(string name, X509Certificate2? issuer, string[]? usages = null, DateTimeOffset? notAfter = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        var oids = new OidCollection();
        foreach (string usage in usages ?? [ServerAuthentication, ClientAuthentication]) oids.Add(new Oid(usage));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(oids, false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        DateTimeOffset from = DateTimeOffset.UtcNow.AddDays(-1), to = notAfter ?? DateTimeOffset.UtcNow.AddDays(10);
        X509Certificate2 certificate;
        if (issuer is null) certificate = request.CreateSelfSigned(from, to);
        else
        {
            byte[] serial = BitConverter.GetBytes(Interlocked.Increment(ref _serial) + 1000L);
            using var issued = request.Create(issuer, from, to, serial);
            certificate = issued.CopyWithPrivateKey(key);
        }
        using (certificate)
        {
            string crt = System.IO.Path.Combine(folder, name + ".crt"), pem = System.IO.Path.Combine(folder, name + ".key");
            File.WriteAllText(crt, certificate.ExportCertificatePem());
            File.WriteAllText(pem, key.ExportPkcs8PrivateKeyPem());
            return (crt, pem);
        }
    }

    public const string ClientOnly = ClientAuthentication, ServerOnly = ServerAuthentication;
}
