#!/usr/bin/perl
# Seal the message on stdin with Mail::DKIM's ARC signer, as a forwarder does: the three
# ARC fields of the next instance printed above the message. Args: KEYFILE DOMAIN SELECTOR
# SRVID CHAIN (the cv= to claim: "ar" to take it from our Authentication-Results, or
# none, pass, fail). The message must carry an Authentication-Results field of SRVID.
use strict;
use warnings;
use Mail::DKIM::ARC::Signer;
use Mail::DKIM::PrivateKey;

my ($keyfile, $domain, $selector, $srvid, $chain) = @ARGV;
# Loaded (line by line) and converted here: this Mail::DKIM's ARC signer signs with the
# key as loaded, unconverted.
my $key = Mail::DKIM::PrivateKey->load(File => $keyfile);
$key->convert or die "cannot load $keyfile\n";
binmode STDIN;
binmode STDOUT;
local $/;
my $msg = <STDIN>;
$msg =~ s/\r?\n/\r\n/g;
my $arc = Mail::DKIM::ARC::Signer->new(
    Algorithm => "rsa-sha256",
    Chain     => $chain,
    Domain    => $domain,
    SrvId     => $srvid,
    Selector  => $selector,
    Key       => $key,
    Headers   => "from:to:subject:date:message-id",
);
$arc->PRINT($msg);
$arc->CLOSE;
die "ARC signer: " . $arc->result . " " . ($arc->result_detail // "") . "\n"
    unless $arc->result eq "sealed";
print $arc->as_string, $msg;
