"""wanserve.api"""
