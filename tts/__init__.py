"""Text-to-speech: engines behind one small protocol, text cleaning, PCM framing."""
