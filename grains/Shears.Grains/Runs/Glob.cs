namespace Shears.Grains.Runs;

/// <summary>Shell-style name patterns for --include/--exclude: '*' matches any run of characters (dots too), '?' one.</summary>
public static class Glob
{
    public static bool IsMatch(string pattern, string name) => Match(pattern, 0, name, 0);

    private static bool Match(string p, int pi, string s, int si)
    {
        int starP = -1, starS = 0;
        while (si < s.Length)
        {
            if (pi < p.Length && (p[pi] == '?' || p[pi] == s[si])) { pi++; si++; }
            else if (pi < p.Length && p[pi] == '*') { starP = pi++; starS = si; }
            else if (starP >= 0) { pi = starP + 1; si = ++starS; }
            else return false;
        }
        while (pi < p.Length && p[pi] == '*') pi++;
        return pi == p.Length;
    }
}
