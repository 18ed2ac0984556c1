"""Replay scripts: byte-level guest commands, one JSON line each, sent through a guest machine's driver.

`script` is the format (what a line of each controller family holds, its expectation, the outcome line);
`runner` sends the parsed lines through a `scenarios.machine.Machine` and gives each outcome in the script's terms.
"""
