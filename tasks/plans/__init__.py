"""Plans: the commands and shell snippets the tasks run, built as data (argv lists and
text) from plain values. Nothing here executes or takes a Context; tests compare the exact
strings."""
