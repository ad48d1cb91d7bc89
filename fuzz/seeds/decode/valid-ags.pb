
$bfe8f2ea-9999-4d53-8fa5-795be5e33a1ccase-bfe8f2ea

civento-he06"
99115005104000*064310012πçÿ:«
application/jsonurn:xoev-de:fim:standard:sampleë{"sample":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}BŸ
attachment-1
sample.pdfapplication/pdf"
attachment(2Äd665ee637ef8fcda8e45f6d8b29216893952facde8430bc1441b7afa5e7c258568a4ec19506fc25383a31c7770fdf2bcf0b82336e4b3cc27172ee447366686e8:%PDF-1.7 sample attachment
