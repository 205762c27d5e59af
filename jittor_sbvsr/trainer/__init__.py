"""Self-supervised training of Self-Blind-VSR (the reference's main.py / Trainer_Flow_Video)."""
