"""llm4cdsr: LLM-enhanced cross-domain sequential recommendation (LLM4CDSR, SIGIR 2025)."""

__version__ = "0.1.0"
