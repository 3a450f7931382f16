"""lcfast.pipeline"""
