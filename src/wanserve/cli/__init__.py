"""wanserve.cli"""
