"""Engine adapters: `sim` (in-process stand-in for WhatsApp) and `neonize` (the real network)."""
