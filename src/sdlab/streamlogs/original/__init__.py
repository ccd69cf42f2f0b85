"""The seed's log-streaming service, rebuilt faithfully to compare with (`service.py`)."""
