using System.Text;

namespace Shears.Pruning.Models;

/// <summary>
/// GPT-2's byte-level alphabet: every byte maps to one printable character — the printable Latin-1 bytes
/// ('!'–'~', '¡'–'¬', '®'–'ÿ') to themselves, the other 68 in byte order to U+0100, U+0101, … (so a space is 'Ġ').
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] Table = Build();

    private static char[] Build()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    /// <summary>The character byte <paramref name="b"/> maps to.</summary>
    public static char Of(byte b) => Table[b];

    /// <summary>The UTF-8 bytes of <paramref name="text"/>, each as its alphabet character.</summary>
    public static string Map(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, (chars, source) =>
        {
            for (int i = 0; i < source.Length; i++) chars[i] = Table[source[i]];
        });
    }
}
