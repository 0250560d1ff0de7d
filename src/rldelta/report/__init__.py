"""Presentation: terminal tables and the HTML report; nothing new is computed here.

Above the engines and train, below the study that writes its report; the plots themselves come from plots/.
"""
