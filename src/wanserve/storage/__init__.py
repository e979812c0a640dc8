"""wanserve.storage"""
