#!/usr/bin/perl
# Sign the message on stdin with Mail::DKIM: a DKIM-Signature (rsa-sha256, relaxed) and a
# DomainKey-Signature (rsa-sha1, nofws), printed above the message. Args: KEYFILE DOMAIN
# SELECTOR (the key in traditional "RSA PRIVATE KEY" PEM).
use strict;
use warnings;
use Mail::DKIM::Signer;
use Mail::DKIM::Signature;
use Mail::DKIM::DkSignature;
use Mail::DKIM::PrivateKey;

my ($keyfile, $domain, $selector) = @ARGV;
my $key = Mail::DKIM::PrivateKey->load(File => $keyfile);
binmode STDIN;
binmode STDOUT;
local $/;
my $msg = <STDIN>;
$msg =~ s/\r?\n/\r\n/g;
my $signer = Mail::DKIM::Signer->new(
    Policy => sub {
        my $s = shift;
        my @sigs = (
            Mail::DKIM::Signature->new(
                Algorithm => "rsa-sha256", Method => "relaxed", Headers => $s->headers,
                Domain => $domain, Selector => $selector),
            Mail::DKIM::DkSignature->new(
                Algorithm => "rsa-sha1", Method => "nofws", Headers => $s->headers,
                Domain => $domain, Selector => $selector),
        );
        foreach my $sig (@sigs) {
            $sig->key($key);    # a Key argument to new() is not honoured here
            $s->add_signature($sig);
        }
        return;
    },
);
$signer->PRINT($msg);
$signer->CLOSE;
foreach my $sig ($signer->signatures) {
    my $text = $sig->as_string;
    $text =~ s/\r?\n/\n/g;
    print $text, "\n";
}
$msg =~ s/\r\n/\n/g;
print $msg;
