using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Shears.Client.Tests.Monitoring;

/// <summary>
/// Debian's Chromium, headless, driven over the DevTools protocol (a WebSocket): one page that is loaded once and
/// then read while its own script updates it.
/// </summary>
public sealed class HeadlessChromium : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ProcessLog _log;
    private readonly string _profile;
    private ClientWebSocket? _socket;
    private int _nextId;

    private HeadlessChromium(Process process, string profile)
    {
        _process = process;
        _profile = profile;
        _log = new ProcessLog(process);
    }

    public static string? Binary => PrometheusServer.Which("chromium");

    public static async Task<HeadlessChromium> StartAsync(string url)
    {
        string profile = Path.Combine(Path.GetTempPath(), "shears-chromium-" + Guid.NewGuid().ToString("N")[..8]);
        int port = SiloProcess.FreePort();
        var info = new ProcessStartInfo(Binary ?? throw new InvalidOperationException("chromium is not installed"))
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,1400",
                     $"--remote-debugging-port={port}", $"--user-data-dir={profile}", url })
            info.ArgumentList.Add(a);
        var browser = new HeadlessChromium(Process.Start(info)!, profile);
        using var http = new HttpClient();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            Assert.False(browser._process.HasExited, "chromium exited:\n" + browser._log);
            try
            {
                var targets = JsonNode.Parse(await http.GetStringAsync($"http://127.0.0.1:{port}/json/list"))!.AsArray();
                if (targets.FirstOrDefault(t => (string?)t!["type"] == "page") is { } page)
                {
                    browser._socket = new ClientWebSocket();
                    await browser._socket.ConnectAsync(new Uri((string)page["webSocketDebuggerUrl"]!), CancellationToken.None);
                    return browser;
                }
            }
            catch (HttpRequestException) { }
            Assert.True(DateTime.UtcNow < deadline, "chromium's DevTools did not answer:\n" + browser._log);
            await Task.Delay(200);
        }
    }

    /// <summary>Evaluates a JavaScript expression in the page and returns its value (JSON).</summary>
    public async Task<JsonNode?> EvaluateAsync(string expression)
    {
        var result = await SendAsync("Runtime.evaluate", new JsonObject { ["expression"] = expression, ["returnByValue"] = true });
        return result["result"]?["value"]?.DeepClone();
    }

    /// <summary>A PNG of the page as it is drawn now.</summary>
    public async Task<byte[]> ScreenshotAsync() =>
        Convert.FromBase64String((string)(await SendAsync("Page.captureScreenshot", new JsonObject { ["format"] = "png", ["captureBeyondViewport"] = true }))["data"]!);

    private async Task<JsonNode> SendAsync(string method, JsonObject parameters)
    {
        int id = ++_nextId;
        var message = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters };
        await _socket!.SendAsync(Encoding.UTF8.GetBytes(message.ToJsonString()), WebSocketMessageType.Text, true, CancellationToken.None);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var buffer = new byte[1 << 16];
        while (true)
        {
            using var received = new MemoryStream();
            WebSocketReceiveResult part;
            do
            {
                part = await _socket.ReceiveAsync(buffer, timeout.Token);
                received.Write(buffer, 0, part.Count);
            }
            while (!part.EndOfMessage);
            var reply = JsonNode.Parse(received.ToArray())!;
            if ((int?)reply["id"] != id) continue; // an event, or the answer to another call
            if (reply["error"] is { } error) throw new InvalidOperationException($"{method}: {error.ToJsonString()}");
            return reply["result"]!;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _socket?.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        try { Directory.Delete(_profile, recursive: true); } catch (IOException) { }
    }
}
