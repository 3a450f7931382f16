"""lcfast.model"""
