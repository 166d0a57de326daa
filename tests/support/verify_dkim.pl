#!/usr/bin/perl
# Verify every DKIM-Signature and DomainKey-Signature of the message on stdin with
# Mail::DKIM, looking keys up on the DNS server given as HOST PORT. One line per
# signature: type domain selector result_detail.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my ($host, $port) = @ARGV;
my $res = Net::DNS::Resolver->new(
    nameservers => [$host], port => $port, recurse => 1,
    tcp_timeout => 5, udp_timeout => 5, retry => 1,
);
Mail::DKIM::DNS::resolver($res);
binmode STDIN;
local $/;
my $msg = <STDIN>;
$msg =~ s/\r?\n/\r\n/g;
my $dkim = Mail::DKIM::Verifier->new();
$dkim->PRINT($msg);
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    my $type = ref($sig) =~ /DkSignature/ ? "domainkeys" : "dkim";
    printf "%s %s %s %s\n", $type, $sig->domain, $sig->selector, $sig->result_detail;
}
