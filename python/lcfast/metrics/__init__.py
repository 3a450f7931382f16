"""lcfast.metrics"""
