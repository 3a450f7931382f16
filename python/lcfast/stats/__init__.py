"""lcfast.stats"""
