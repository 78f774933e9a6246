#!/usr/bin/env perl
# Lists the let chains in the Rust files named (Rust 1.88; Cargo.toml says
# rust-version 1.85) and exits 1 if there is any. A let chain is an `if
# let` or `while let` whose condition goes on with `&&` (or `||`) at its own
# level, before its block, or a `let` that follows `&&`. Comments, strings
# and char literals are blanked out first (line breaks kept, for the line
# numbers); `&&` inside brackets (a closure's body, a call's arguments) is
# not the condition's.
use strict;
use warnings;

my $found = 0;
for my $file (@ARGV) {
    open(my $fh, '<', $file) or die "$file: $!";
    local $/;
    my $src = <$fh>;
    close($fh);
    my $blank = sub { my $s = shift; $s =~ s/[^\n]/ /g; $s };
    $src =~ s{
        ( //[^\n]*                         # line comment
        | /\*.*?\*/                        # block comment (not nested)
        | r(\#*)".*?"\2                    # raw string
        | b?"(?:\\.|[^"\\])*"              # string, byte string
        | b?'(?:\\.|[^'\\\n])'             # char, byte (not a lifetime)
        )
    }{$blank->($1)}gsex;
    while ($src =~ /\b(?:if|while)\s+let\b/g) {
        my $start = $-[0];
        my $depth = 0;
        my $i = pos($src);
        while ($i < length($src)) {
            my $c = substr($src, $i, 1);
            if ($c eq '(' || $c eq '[') { $depth++ }
            elsif ($c eq ')' || $c eq ']') { $depth-- }
            elsif ($c eq '{') {
                last if $depth == 0; # the block: the condition ends here
                $depth++;
            }
            elsif ($c eq '}') { $depth-- }
            elsif ($depth == 0 && substr($src, $i, 2) =~ /^(?:&&|\|\|)$/) {
                report($file, $src, $start);
                last;
            }
            $i++;
        }
    }
    while ($src =~ /&&\s*let\b/g) {
        report($file, $src, $-[0]);
    }
}
exit($found ? 1 : 0);

sub report {
    my ($file, $src, $at) = @_;
    my $line = 1 + (substr($src, 0, $at) =~ tr/\n//);
    print STDERR "$file:$line: a let chain (Rust 1.88; Cargo.toml says rust-version 1.85)\n";
    $found++;
}
