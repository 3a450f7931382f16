"""lcfast.data"""
