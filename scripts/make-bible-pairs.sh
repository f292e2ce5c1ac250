#!/usr/bin/env bash
# Builds verse-aligned pairs of two public-domain English Bible translations, Old Testament only
# (Genesis 1:1 – Malachi 4:6), for the paraphrase-retrieval measure of encoder pruning:
#
#   data/bible-ot-pairs.tsv          ref <TAB> kjv <TAB> web, every verse present in both (not committed; ~6 MB)
#   data/bible-ot-sample-2000.tsv    a deterministic, evenly spread subset of 2,000 pairs (committed)
#
# Sources (Debian 12 packages; see data/README.md for the licences):
#   KJV  bible-kjv + bible-kjv-text    `bible -f -l100000 'Gen1:1-Mal4:6'`, one "Ge1:1 text" line per verse
#   WEB  sword-text-web + libsword-utils `mod2imp engWEB2015eb`, OSIS markup; footnotes and headings dropped
#
# Usage: scripts/make-bible-pairs.sh [OUTPUT_DIR]   (default: data/ beside this script's folder)
# Installs the four packages with apt-get when they are missing (needs root then). Needs bash, perl, awk.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$here/../data}"
sample_size=2000
packages=(bible-kjv bible-kjv-text sword-text-web libsword-utils)
web_module=engWEB2015eb

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "make-bible-pairs: the Debian packages ${missing[*]} are missing; run as root (or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "make-bible-pairs: installing ${missing[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

# KJV: one line per verse, "<abbrev><chapter>:<verse> <text>". The 39 books come in canonical order.
bible -f -l100000 'Gen1:1-Mal4:6' >"$work/kjv.txt"

# WEB: "$$$<Book name> <chapter>:<verse>" then the verse's OSIS markup. Testament 1 of this module (NRSVA
# versification) also holds the deuterocanon after Malachi; only the first 39 books are kept.
mod2imp "$web_module" >"$work/web.imp"

# The canonical names of the 39 books, used in the ref column ("1 Samuel 3:4").
books='Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|1 Samuel|2 Samuel|1 Kings|2 Kings|1 Chronicles|2 Chronicles|Ezra|Nehemiah|Esther|Job|Psalms|Proverbs|Ecclesiastes|Song of Solomon|Isaiah|Jeremiah|Lamentations|Ezekiel|Daniel|Hosea|Joel|Amos|Obadiah|Jonah|Micah|Nahum|Habakkuk|Zephaniah|Haggai|Zechariah|Malachi'

BOOKS="$books" perl -CSD -e '
  use strict; use warnings;
  my @names = split /\|/, $ENV{BOOKS};
  my ($kjv_file, $web_file, $out_file) = @ARGV;

  sub clean {
    my ($s) = @_;
    $s =~ s/\t/ /g;
    $s =~ s/\s+/ /g;
    $s =~ s/^ //; $s =~ s/ $//;
    return $s;
  }

  # KJV: books numbered in order of first appearance.
  my (%kjv, @order, %kjv_book);
  open my $k, "<", $kjv_file or die "$kjv_file: $!";
  while (my $line = <$k>) {
    chomp $line;
    next if $line eq "";
    $line =~ /^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$/ or die "make-bible-pairs: unexpected KJV line: $line\n";
    my ($abbrev, $chapter, $verse, $text) = ($1, $2, $3, $4);
    if (!exists $kjv_book{$abbrev}) { my $index = keys %kjv_book; $kjv_book{$abbrev} = $index; }
    my $key = join ":", $kjv_book{$abbrev}, $chapter, $verse;
    $kjv{$key} = clean($text);
    push @order, $key;
  }
  close $k;
  die "make-bible-pairs: the KJV gave " . (scalar keys %kjv_book) . " books, expected 39\n" unless keys %kjv_book == 39;

  # WEB: the first 39 books of testament 1, markup stripped.
  my (%web, %web_book, $key, $text);
  my $flush = sub {
    return unless defined $key;
    my $s = $text;
    $s =~ s{<note\b[^>]*/>}{}g;
    $s =~ s{<note\b.*?</note>}{}gs;      # footnotes and cross-references
    $s =~ s{<title\b[^>]*/>}{}g;
    $s =~ s{<title\b.*?</title>}{}gs;    # headings and psalm superscriptions (the KJV text has neither)
    $s =~ s{<[^>]*>}{ }g;                # every other element keeps its words (<w>, <transChange>, <l>, …)
    $s =~ s/&lt;/</g; $s =~ s/&gt;/>/g; $s =~ s/&quot;/"/g; $s =~ s/&apos;/\x27/g; $s =~ s/&amp;/&/g;
    $s = clean($s);
    $s =~ s/ ([,.;:!?)\]\x{201D}\x{2019}])/$1/g;  # spaces left where a tag stood next to punctuation
    $s =~ s/([(\[\x{201C}\x{2018}]) /$1/g;
    $web{$key} = $s if $s ne "";
    undef $key;
  };
  open my $w, "<", $web_file or die "$web_file: $!";
  my $testament = 0;
  while (my $line = <$w>) {
    chomp $line;
    if ($line =~ /^\$\$\$(.*)$/) {
      my $head = $1;
      $flush->();
      if ($head =~ /^\[ Testament (\d+) Heading \]$/) { $testament = $1; next; }
      next unless $testament == 1;
      next unless $head =~ /^(.+) (\d+):(\d+)$/;
      my ($book, $chapter, $verse) = ($1, $2, $3);
      next if $chapter == 0 || $verse == 0;   # book and chapter introductions
      if (!exists $web_book{$book}) {
        next if keys %web_book == 39;         # past Malachi: the deuterocanon
        my $index = keys %web_book;
        $web_book{$book} = $index;
      }
      ($key, $text) = (join(":", $web_book{$book}, $chapter, $verse), "");
    } elsif (defined $key) {
      $text .= " " . $line;
    }
  }
  $flush->();
  close $w;
  die "make-bible-pairs: the WEB gave " . (scalar keys %web_book) . " Old Testament books, expected 39\n" unless keys %web_book == 39;

  open my $o, ">", $out_file or die "$out_file: $!";
  print $o "ref\tkjv\tweb\n";
  my ($pairs, $kjv_only) = (0, 0);
  for my $key (@order) {
    if (!defined $web{$key} || $kjv{$key} eq "") { $kjv_only++; next; }
    my ($b, $c, $v) = split /:/, $key;
    print $o "$names[$b] $c:$v\t$kjv{$key}\t$web{$key}\n";
    $pairs++;
  }
  close $o;
  my $web_only = grep { !exists $kjv{$_} } keys %web;
  printf STDERR "make-bible-pairs: %d KJV verses, %d WEB verses, %d pairs (%d KJV-only, %d WEB-only refs left out)\n",
    scalar(@order), scalar(keys %web), $pairs, $kjv_only, $web_only;
' "$work/kjv.txt" "$work/web.imp" "$work/pairs.tsv"

# The held-out sample: pairs at evenly spaced positions floor((j + 1/2)·N/2000), j = 0…1999, so every book
# is represented and the choice depends only on the pairs file.
awk -F'\t' -v n="$sample_size" '
  NR == FNR { if (FNR > 1) total++; next }
  FNR == 1 { print; if (total < n) { print "make-bible-pairs: only " total " pairs" > "/dev/stderr"; exit 1 }
             for (j = 0; j < n; j++) pick[int((j + 0.5) * total / n) + 2] = 1; next }
  FNR in pick { print }
' "$work/pairs.tsv" "$work/pairs.tsv" >"$work/sample.tsv"

mv "$work/pairs.tsv" "$out_dir/bible-ot-pairs.tsv"
mv "$work/sample.tsv" "$out_dir/bible-ot-sample-$sample_size.tsv"
for f in "$out_dir/bible-ot-pairs.tsv" "$out_dir/bible-ot-sample-$sample_size.tsv"; do
  echo "make-bible-pairs: wrote $f ($(($(wc -l <"$f") - 1)) pairs, $(wc -c <"$f") bytes)" >&2
done
