#!/usr/bin/perl
# Evaluate the ARC chain of the message on stdin with Mail::DKIM's ARC verifier, looking
# keys up on the DNS server given as HOST PORT. One line: the chain's result (pass, fail,
# none), a space, Mail::DKIM's detail.
use strict;
use warnings;
use Mail::DKIM::ARC::Verifier;
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
my $arc = Mail::DKIM::ARC::Verifier->new();
$arc->PRINT($msg);
$arc->CLOSE;
printf "%s %s\n", $arc->result, $arc->result_detail // "";
