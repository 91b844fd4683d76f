"""deploykit: model card -> validated plan -> proven vLLM deployment."""

__version__ = "0.1.0"
