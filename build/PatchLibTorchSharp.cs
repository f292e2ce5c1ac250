using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

// libLibTorchSharp.so (TorchSharp 0.107) asks for GLIBCXX_3.4.32 for one symbol that no
// relocation uses; Debian 12's libstdc++ stops at 3.4.30, so the loader refuses the library.
// Marking that one version requirement weak (VER_FLG_WEAK in its Vernaux entry) lets it load.
// The task is idempotent and leaves the file alone where the system libstdc++ has the version.
public class PatchLibTorchSharp : Task
{
    [Required] public string Directory { get; set; } = "";
    public string VersionName { get; set; } = "GLIBCXX_3.4.32";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        string lib = Path.Combine(Directory, "libLibTorchSharp.so");
        if (!File.Exists(lib)) return true;
        if (SystemHasVersion())
        {
            Log.LogMessage(MessageImportance.Low, $"libstdc++ provides {VersionName}; {lib} left as is.");
            return true;
        }
        try
        {
            int result = Patch(lib);
            if (result == 1) Log.LogMessage(MessageImportance.High, $"Marked {VersionName} weak in {lib}.");
            return true;
        }
        catch (Exception e)
        {
            Log.LogError($"Could not patch {lib}: {e.Message}");
            return false;
        }
    }

    bool SystemHasVersion()
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
        };
        byte[] needle = Encoding.ASCII.GetBytes(VersionName + "\0");
        foreach (var c in candidates)
        {
            if (!File.Exists(c)) continue;
            byte[] bytes = File.ReadAllBytes(c);
            return IndexOf(bytes, needle) >= 0;
        }
        return true; // no glibc libstdc++ found: nothing we know how to judge, leave it alone
    }

    // 0: nothing to do, 1: patched.
    int Patch(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("expected a 64-bit little-endian ELF file");
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        bool changed = false;
        bool found = false;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            uint type = BitConverter.ToUInt32(elf, (int)sh + 4);
            if (type != ShtGnuVerneed) continue;
            long offset = BitConverter.ToInt64(elf, (int)sh + 0x18);
            uint link = BitConverter.ToUInt32(elf, (int)sh + 0x28);
            uint count = BitConverter.ToUInt32(elf, (int)sh + 0x2C);
            long strSh = shoff + (long)link * shentsize;
            long strOffset = BitConverter.ToInt64(elf, (int)strSh + 0x18);
            long need = offset;
            for (uint n = 0; n < count; n++)
            {
                ushort auxCount = BitConverter.ToUInt16(elf, (int)need + 2);
                uint auxRel = BitConverter.ToUInt32(elf, (int)need + 8);
                uint nextRel = BitConverter.ToUInt32(elf, (int)need + 12);
                long aux = need + auxRel;
                for (int a = 0; a < auxCount; a++)
                {
                    ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                    uint nameRel = BitConverter.ToUInt32(elf, (int)aux + 8);
                    uint auxNext = BitConverter.ToUInt32(elf, (int)aux + 12);
                    if (ReadString(elf, strOffset + nameRel) == VersionName)
                    {
                        found = true;
                        if ((flags & VerFlgWeak) == 0)
                        {
                            BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)aux + 4);
                            changed = true;
                        }
                    }
                    if (auxNext == 0) break;
                    aux += auxNext;
                }
                if (nextRel == 0) break;
                need += nextRel;
            }
        }
        if (!found || !changed) return 0;
        string tmp = path + ".patching";
        File.WriteAllBytes(tmp, elf);
        File.Copy(tmp, path, true);
        File.Delete(tmp);
        return 1;
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            if (hay[i] != needle[0]) continue;
            int j = 1;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    static string ReadString(byte[] bytes, long at)
    {
        int end = (int)at;
        while (end < bytes.Length && bytes[end] != 0) end++;
        return Encoding.ASCII.GetString(bytes, (int)at, end - (int)at);
    }
}
