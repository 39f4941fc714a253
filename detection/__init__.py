"""Detection: SSDLite head and detection backbone search (not implemented yet; see the issues)."""
