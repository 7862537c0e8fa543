"""blacklist"""
