using System.Buffers.Binary;
using System.Text;

namespace Shears.Pruning.Tests.Fuzz;

/// <summary>
/// Mutations of a valid file, as a mutation fuzzer makes them: bit flips, bytes set to boundary values, 2-, 4- and
/// 8-byte fields overwritten with extreme integers (forged lengths and offsets), cuts, inserted and repeated chunks,
/// and — for text — digits and structural characters replaced. Seeded: the same seed makes the same file.
/// </summary>
public static class Mutations
{
    private static readonly long[] Extremes =
        [0, 1, -1, 127, 128, 255, 256, short.MaxValue, ushort.MaxValue, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 40, 1L << 62];

    private static readonly string[] TextTokens =
        ["0", "-1", "9223372036854775807", "18446744073709551616", "1e308", "-0", "null", "true", "\"\"", "[]", "{}", "\"F64\"", "\"I4\"", "\"BOGUS\"", ",", ":", "\"", "\\u0000", "[", "}"];

    public static byte[] Mutate(byte[] valid, int seed, bool text)
    {
        var random = new Random(seed);
        var bytes = new List<byte>(valid);
        int count = 1 + random.Next(4);
        for (int m = 0; m < count && bytes.Count > 0; m++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(text ? 8 : 7))
            {
                case 0: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                case 1: bytes[at] = (byte)Extremes[random.Next(6)]; break;
                case 2:
                {
                    int width = new[] { 2, 4, 8 }[random.Next(3)];
                    if (at + width > bytes.Count) break;
                    Span<byte> field = stackalloc byte[8];
                    BinaryPrimitives.WriteInt64LittleEndian(field, Extremes[random.Next(Extremes.Length)]);
                    for (int i = 0; i < width; i++) bytes[at + i] = field[i];
                    break;
                }
                case 3: bytes.RemoveRange(at, bytes.Count - at); break;
                case 4:
                {
                    int length = Math.Min(bytes.Count - at, 1 + random.Next(64));
                    bytes.RemoveRange(at, length);
                    break;
                }
                case 5:
                {
                    int length = Math.Min(bytes.Count - at, 1 + random.Next(64));
                    var chunk = bytes.GetRange(at, length);
                    bytes.InsertRange(random.Next(bytes.Count), chunk);
                    break;
                }
                case 6:
                {
                    var noise = new byte[1 + random.Next(16)];
                    random.NextBytes(noise);
                    bytes.InsertRange(at, noise);
                    break;
                }
                default:
                {
                    // A text token in place of a run of the file's own characters.
                    int length = Math.Min(bytes.Count - at, 1 + random.Next(12));
                    bytes.RemoveRange(at, length);
                    bytes.InsertRange(at, Encoding.UTF8.GetBytes(TextTokens[random.Next(TextTokens.Length)]));
                    break;
                }
            }
        }
        return bytes.ToArray();
    }

    /// <summary>
    /// Runs <paramref name="read"/> on the mutants of seeds 1 to <paramref name="count"/> written at
    /// <paramref name="path"/>: each is accepted, or refused with one of <paramref name="refusals"/> whose message names
    /// the file. Any other exception, or a read that takes longer than <paramref name="limit"/>, fails with the seed.
    /// </summary>
    public static (int Accepted, int Refused) Run(Func<int, byte[]> mutant, string path, int count, Action<string> read, Type[] refusals, TimeSpan limit)
    {
        int accepted = 0, refused = 0;
        string name = Path.GetFileName(path);
        for (int seed = 1; seed <= count; seed++)
        {
            File.WriteAllBytes(path, mutant(seed));
            var work = Task.Run(() => read(path));
            if (!((IAsyncResult)work).AsyncWaitHandle.WaitOne(limit))
                Assert.Fail($"seed {seed}: reading the mutated {name} took longer than {limit.TotalSeconds} s");
            if (work.Exception?.InnerException is { } e)
            {
                Assert.True(refusals.Any(t => t.IsInstanceOfType(e)), $"seed {seed}: {name} gave {e.GetType().Name}, not Shears' own error: {e}");
                Assert.True(e.Message.Contains(name, StringComparison.Ordinal), $"seed {seed}: the error does not name {name}: {e.Message}");
                refused++;
            }
            else accepted++;
        }
        return (accepted, refused);
    }
}
