"""Traffic replay: scenario -> plan -> sans-IO flows driven by asyncio -> flow log."""
