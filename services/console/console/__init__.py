"""The program console: server-rendered pages for program staff, auditors, operators and providers."""
