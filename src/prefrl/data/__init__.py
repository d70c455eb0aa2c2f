"""prefrl.data"""
