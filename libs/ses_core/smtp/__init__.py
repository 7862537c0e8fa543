"""smtp"""
