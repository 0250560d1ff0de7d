"""Presentation above the engines and train, below the study that writes its report: terminal tables and the HTML report. Plots come from plots/; nothing new is computed here.
