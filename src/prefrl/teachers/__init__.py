"""prefrl.teachers"""
