"""The Whisper engine: faster-whisper (CTranslate2) batched over segments (engine.py)."""
