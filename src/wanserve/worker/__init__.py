"""wanserve.worker"""
