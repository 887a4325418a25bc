"""The spine shared by every DSI service: store, bus, relay, consumer, HTTP and telemetry plumbing.

Nothing here knows the program's rules; services never import each other, only this package.
"""
