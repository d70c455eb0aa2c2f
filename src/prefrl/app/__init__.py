"""prefrl.app"""
