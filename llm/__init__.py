"""The LLM side of a call: chunking, the streaming turn, providers. Pure asyncio, no Django."""
