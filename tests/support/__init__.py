"""End-to-end test harness: real upstream registries, deterministic test images and real pull clients.

Everything runs on 127.0.0.1 with free ports and private state directories, so tests never reach the
internet and never touch the machine's own container storage.
"""
