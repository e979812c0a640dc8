"""wanserve.jobs"""
