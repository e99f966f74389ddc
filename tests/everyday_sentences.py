"""Everyday sentences written for the tests of the shipped model, six per language.

Ordinary sentences of common words, from no training source: written for these tests, they appear in none of the
sources `diffusion-asr corpus` reads (checked against the corpus it builds) and are not word-list strings, so no
model trained by the project's recipes has heard them. The corpus's own held-out sentences share its sources'
vocabulary (fortunes, game dialogues, LibreOffice's help); these do not (docs/training-v2.md, seventh run).
"""

from __future__ import annotations

EVERYDAY_SENTENCES: dict[str, list[str]] = {
    "en": [
        "The children walk to school in the morning.",
        "Please close the door when you leave the room.",
        "My brother bought a new car last week.",
        "We had dinner with our friends on Saturday.",
        "The train to the city leaves at nine o'clock.",
        "She reads a book before she goes to sleep.",
    ],
    "de": [
        "Die Kinder gehen am Morgen in die Schule.",
        "Bitte schließ die Tür, wenn du das Zimmer verlässt.",
        "Mein Bruder hat letzte Woche ein neues Auto gekauft.",
        "Wir haben am Samstag mit unseren Freunden gegessen.",
        "Der Zug in die Stadt fährt um neun Uhr ab.",
        "Sie liest ein Buch, bevor sie schlafen geht.",
    ],
    "fr": [
        "Les enfants vont à l'école le matin.",
        "Ferme la porte quand tu quittes la chambre.",
        "Mon frère a acheté une nouvelle voiture la semaine dernière.",
        "Nous avons dîné avec nos amis samedi soir.",
        "Le train pour la ville part à neuf heures.",
        "Elle lit un livre avant de dormir.",
    ],
    "es": [
        "Los niños van a la escuela por la mañana.",
        "Por favor, cierra la puerta cuando salgas.",
        "Mi hermano compró un coche nuevo la semana pasada.",
        "Cenamos con nuestros amigos el sábado.",
        "El tren a la ciudad sale a las nueve.",
        "Ella lee un libro antes de dormir.",
    ],
    "hi": [
        "बच्चे सुबह स्कूल जाते हैं।",
        "कृपया कमरे से जाते समय दरवाजा बंद करो।",
        "मेरे भाई ने पिछले हफ्ते नई गाड़ी खरीदी।",
        "हमने शनिवार को अपने दोस्तों के साथ खाना खाया।",
        "शहर की ट्रेन नौ बजे जाती है।",
        "वह सोने से पहले किताब पढ़ती है।",
    ],
    "zh": [
        "孩子们早上去学校。",
        "你离开房间的时候请关门。",
        "我哥哥上个星期买了一辆新车。",
        "星期六我们和朋友一起吃晚饭。",
        "去城里的火车九点出发。",
        "她睡觉以前看书。",
    ],
}
