"""Speech-to-text: engines behind one small protocol."""
